"""thrifty-gateway: the OpenAI-compatible front door of every ModelService on a cluster.

Clients send OpenAI requests to one address; the gateway routes each on its `model` to the ready
endpoints of the ModelService that serves that name (found from the EndpointSlices of the
ModelService's Service, through a Kubernetes watch), balances on requests in flight, retries a
connection failure on another endpoint, and holds requests for a ModelService at zero replicas
until an endpoint is ready, exporting the held count the operator reads to scale from zero.

Modules, one concept each: `errors` (OpenAI-style errors and the fixed set of outcomes),
`catalog` (ModelServices and EndpointSlices, as read from the API server, to routes),
`balancer` (which endpoint), `holding` (bounded holding and gradual release), `server` (the HTTP
front), `kube` (the watches), `__main__` (the command line). See docs/gateway.md.
"""
