"""two Upgrade fields (the second h2c): not tunnelled"""

request = {'keep_alive': True, 'upgrade': False}
h11_differs = "upgrade-websocket-only"
