"""opswatch: keep a server's ops files in step with your repository."""

__version__ = "0.1.0"
