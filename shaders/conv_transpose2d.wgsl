// placeholder: written by the conv_transpose2d kernel work
