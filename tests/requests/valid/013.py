"""empty lines before the request-line are skipped (RFC 9112 2.2)"""

h11_differs = 'leading-empty-lines'
request = {'method': b'GET'}
