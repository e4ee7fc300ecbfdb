"""absolute-form with userinfo"""

status = 400
h11_differs = 'host-syntax'
