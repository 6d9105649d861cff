"""The component catalogue (data only): one YAML per component, a folder per family."""
