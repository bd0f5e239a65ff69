"""MainNet architectures that torchvision/transformers do not ship as such."""
