"""reason with SP, HTAB and obs-text"""

response = {'reason': b'Tr\xc3\xa8s\tbien OK'}
