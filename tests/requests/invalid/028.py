"""Content-Length with a plus sign"""

status = 400
