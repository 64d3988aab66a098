"""The custom resources of thrifty (group ``thrifty.dev``, version ``v1alpha1``) as pydantic models.

These models are the single source of truth: ``python -m thrifty.api.crdgen`` turns them into the
CustomResourceDefinitions in ``crds/``, and the operator parses every object it reads through them,
so the schema the API server enforces and the one the code relies on cannot drift apart.
"""

GROUP = "thrifty.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
