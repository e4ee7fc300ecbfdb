"""Connection names a hop-by-hop field"""

request = {'keep_alive': True}
