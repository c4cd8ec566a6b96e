"""The review console: server-rendered pages at /console (Jinja2, a little plain JavaScript), behind the
same API keys as the API (a login page sets an HTTP-only session cookie; every form carries a CSRF token).
"""
