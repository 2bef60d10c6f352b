from django.urls import path

from modeling import views

urlpatterns = [
    path("p/<slug:slug>/rounds/", views.rounds, name="rounds"),
]
