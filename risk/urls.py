from __future__ import annotations

from django.urls import path

from risk import views

app_name = "risk"

urlpatterns = [
    path("risk/", views.profile, name="profile"),
    path("risk/accounts/<int:pk>/", views.profile_account, name="profile_account"),
    path("risk/dashboard/", views.dashboard, name="dashboard"),
    path("risk/kill-switch/", views.kill_switch, name="kill_switch"),
    path("risk/accounts/<int:pk>/close/", views.position_close, name="position_close"),
    path("risk/states/<int:pk>/reset/", views.state_reset, name="state_reset"),
]
