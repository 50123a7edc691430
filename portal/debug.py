"""Django's error reports without secrets, whatever DEBUG says."""

from django.views.debug import SafeExceptionReporterFilter

from keys.crypto import in_sensitive_frame


class AlwaysSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Honour ``sensitive_variables`` and ``sensitive_post_parameters`` with DEBUG on too.

    Django's own filter steps aside when DEBUG is on (``is_active`` is ``DEBUG is False``),
    so a developer's technical 500 page would show an IAM secret access key typed into the
    registration page. Settings are cleansed by name either way.

    Also honours ``keys.crypto.sensitive_frame``, the wrapper-free mark of the record hot
    path: every variable of a frame that runs a marked function, or was called from one,
    is cleansed (as for ``@sensitive_variables()`` without names).
    """

    def is_active(self, request) -> bool:
        return True

    def get_traceback_frame_variables(self, request, tb_frame):
        if in_sensitive_frame(tb_frame):
            return [(name, self.cleansed_substitute) for name in tb_frame.f_locals]
        return super().get_traceback_frame_variables(request, tb_frame)
