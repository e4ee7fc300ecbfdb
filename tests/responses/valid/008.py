"""101 Switching Protocols"""

response = {'body': 'none', 'status': 101, 'upgrade': True}
