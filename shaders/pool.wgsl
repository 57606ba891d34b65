// placeholder: written by the pool kernel work
