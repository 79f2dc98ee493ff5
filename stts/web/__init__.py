"""The web page: transcribe a file or the microphone from a browser, served by stts itself.

Plain HTML, CSS and JavaScript modules in ``assets/`` (no build step, nothing fetched
from elsewhere), over the same public APIs any client uses: ``/v1/audio/transcriptions``
(streamed), ``/v1/audio/translations``, ``/v1/realtime`` and ``/api/v1/engines``.
"""
