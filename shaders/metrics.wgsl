// placeholder: written by the metrics kernel work
