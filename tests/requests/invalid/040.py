"""Transfer-Encoding in an HTTP/1.0 request"""

status = 400
h11_differs = 'te-in-http10'
