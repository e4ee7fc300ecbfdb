"""bare CR ending the request line"""

status = 400
