"""DEL in a field value"""

status = 400
h11_differs = 'control-bytes'
