// placeholder: written by the concat kernel work
