"""HTTP/0.9-style request line without a version"""

status = 400
