"""empty Content-Length"""

status = 400
