"""an Upgrade that offers more than websocket lets the backend choose h2c: not tunnelled"""

request = {'keep_alive': True, 'upgrade': False}
h11_differs = "upgrade-websocket-only"
