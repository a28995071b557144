from django.contrib import admin
from django.urls import include, path

from accounts.spending import spending_view
from conversations.outages import healthz

urlpatterns = [
    path("", include("conversations.urls")),
    path("v1/", include("gateway.urls")),
    path("accounts/", include("accounts.urls")),
    path("admin/spending/", admin.site.admin_view(spending_view), name="admin_spending"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]
