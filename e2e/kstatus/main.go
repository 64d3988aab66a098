// kstatus prints what sigs.k8s.io/cli-utils' kstatus (the library Flux's health checks and
// `--wait` use) computes for each Kubernetes object read as JSON from stdin: an object or a List.
// One JSON line per object: {"kind", "name", "status", "message"}. e2e tests run it on live
// objects so docs/gitops.md states what the real library says, not a re-implementation of it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	var object map[string]interface{}
	// Kubernetes' decoder: whole numbers become int64, as the library's accessors expect.
	if err := kjson.Unmarshal(data, &object); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not a JSON object:", err)
		os.Exit(2)
	}
	items := []map[string]interface{}{object}
	if list, ok := object["items"].([]interface{}); ok {
		items = items[:0]
		for _, item := range list {
			if m, ok := item.(map[string]interface{}); ok {
				items = append(items, m)
			}
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, item := range items {
		u := &unstructured.Unstructured{Object: item}
		computed, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s %s: %v\n", u.GetKind(), u.GetName(), err)
			os.Exit(1)
		}
		_ = out.Encode(result{u.GetKind(), u.GetName(), string(computed.Status), computed.Message})
	}
}
