from django.contrib import admin
from django.urls import include, path

from accounts.spending import spending_view
from accounts.views import admin_login
from conversations.outages import healthz

# Django tries these in order, and a request keeps the list of those it tried (ResolverMatch.tried) for
# as long as it lives: an open stream's, for minutes. The API and the chat's hot paths come first.
urlpatterns = [
    path("v1/", include("gateway.urls")),
    path("", include("conversations.urls")),
    path("accounts/", include("accounts.urls")),
    path("admin/spending/", admin.site.admin_view(spending_view), name="admin_spending"),
    path("admin/login/", admin_login),  # before admin.site.urls: the admin's log-in, rate limited
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]
