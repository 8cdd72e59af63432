from __future__ import annotations

from django.urls import path

from copytrading import views

app_name = "copytrading"

urlpatterns = [
    path("", views.leader_list, name="home"),
    path("leaders/new/", views.leader_publish, name="leader_publish"),
    path("leaders/<int:pk>/", views.leader_detail, name="leader_detail"),
    path("leaders/<int:pk>/subscribe/", views.subscribe, name="subscribe"),
    path("leaders/<int:pk>/<slug:action>/", views.leader_action, name="leader_action"),
    path("following/", views.following, name="following"),
    path("subscriptions/<int:pk>/", views.subscription_detail, name="subscription_detail"),
    path(
        "subscriptions/<int:pk>/decisions.csv",
        views.decisions_export,
        name="decisions_export",
    ),
    path(
        "subscriptions/<int:pk>/<slug:action>/",
        views.subscription_action,
        name="subscription_action",
    ),
]
