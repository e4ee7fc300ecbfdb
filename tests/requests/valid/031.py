"""h2c upgrade (h2c smuggling): never tunnelled; served as the plain HTTP/1.1 request it also is"""

request = {'keep_alive': True, 'upgrade': False}
h11_differs = "upgrade-websocket-only"
