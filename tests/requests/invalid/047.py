"""three-digit version"""

status = 400
