"""The toolkit's own exception type for problems a user can fix (config, workdir, data, checkpoint, weights).

The CLI prints a `GanJaxError` as one `gan_jax: error:` line and exits 2; any other exception is a bug and
keeps its traceback. It subclasses ValueError, so notebook code that catches ValueError keeps working.

    raise GanJaxError("config.model.kind='resnt' is invalid: valid names: mlp, conv, dcgan, resnet, biggan")
"""


class GanJaxError(ValueError):
    """A problem with the user's input that the message names, with the fix."""
