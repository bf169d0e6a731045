"""placeholder"""
def render(doc):
    return "<html></html>"
