"""version without minor"""

status = 400
