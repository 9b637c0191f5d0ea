"""One exception type for problems the user can fix.

The CLI turns a :class:`UserInputError` into its message and exit code 2; the GUI shows it as a
notification. Anything else is a bug and keeps its traceback.
"""


class UserInputError(ValueError):
    """Bad input (missing file, wrong format, bad option): the message says what is wrong and what
    to do.
    """


class DataWarning(UserWarning):
    """Something about the data the user should know: what the metadata did not say and what was
    assumed instead (a voxel size of 1 nm, a scale with no chunk files). The CLI prints it on stderr
    as ``napari-connectome COMMAND: warning: ...``; napari shows it as a notification.
    """


class NoVoxelSizeWarning(DataWarning):
    """A reader found no voxel size and assumed 1 nm per axis (a command that takes the size
    from another input, as ``agglomerate`` takes SEG's from the EM, drops it for that input)."""
