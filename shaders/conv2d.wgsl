// placeholder: written by the conv2d kernel work
