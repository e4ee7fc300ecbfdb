"""lower-case http version"""

status = 400
