"""CONNECT is not tunnelled by a reverse proxy"""

status = 501
h11_differs = 'connect'
