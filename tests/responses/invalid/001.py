"""unsupported version"""

status = 502
h11_differs = 'version-505'
