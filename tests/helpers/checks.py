"""Small assertions shared by the end-to-end tests."""


def fields(request, name):
    """Values of a field in an h11.Request the backend received (h11 lowercases names)."""
    name = name.lower().encode()
    return [v for n, v in request.headers if n == name]


def field_names(request):
    return [n for n, _ in request.headers]


REFUSAL_STATUSES = {400, 408, 411, 413, 414, 417, 431, 501, 505}
