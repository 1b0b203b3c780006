"""Reading and writing images, the output policy, resource guards, export formats."""
