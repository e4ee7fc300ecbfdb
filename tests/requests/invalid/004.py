"""bare CR inside a field value"""

status = 400
