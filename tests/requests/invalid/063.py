"""TLS handshake bytes"""

status = 400
