"""What a browser opens: the playground (``/``) and the offline API docs (``/docs``)."""
