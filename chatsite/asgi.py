import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

# Static files are served by the app itself in the embedded set-up; behind
# nginx the /static/ prefix never reaches it (see deploy/).
application = ASGIStaticFilesHandler(get_asgi_application())
