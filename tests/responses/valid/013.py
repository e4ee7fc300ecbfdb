"""HTTP/1.0 response with keep-alive"""

h11_differs = 'http10-keep-alive'
response = {'keep_alive': True, 'version': b'1.0'}
