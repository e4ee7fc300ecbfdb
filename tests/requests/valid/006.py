"""HTTP/1.0 asking for keep-alive"""

h11_differs = 'http10-keep-alive'
request = {'keep_alive': True, 'version': b'1.0'}
