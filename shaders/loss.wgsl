// placeholder: written by the loss kernel work
