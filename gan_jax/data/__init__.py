"""Data: toy 2-D/1-D distributions (`toy`) and image datasets through tensorflow-datasets (`images`)."""
