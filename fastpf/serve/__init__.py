"""`fastpf serve`: a local Kubernetes-compatible port-forward endpoint (see `fastpf.serve.main`).

Modules: `main` (CLI), `server` (listening, ALPN dispatch, engine hand-over), `http1`/`http2`
(h11/h2 on asyncio protocols), `api` (sans-IO REST), `cluster` (objects and manifests),
`selectors`, `certs` (TLS material), `kubeconfig`.
"""
