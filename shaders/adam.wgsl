// placeholder: written by the adam kernel work
