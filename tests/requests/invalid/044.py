"""HTTP/1.2"""

status = 505
h11_differs = 'version-505'
