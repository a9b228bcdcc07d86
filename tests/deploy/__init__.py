"""Checks of the deployment files: Dockerfile, docker-compose.yml, k8s/, docs/deployment.md."""
