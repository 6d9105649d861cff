"""The component registry (data only): one YAML per component, a folder per family."""
