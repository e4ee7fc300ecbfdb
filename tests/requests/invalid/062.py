"""a CR without LF before the request line"""

status = 400
