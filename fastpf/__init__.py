"""fastpf: a high-throughput, drop-in replacement for `oc/kubectl port-forward`."""

__version__ = "0.1.0"
